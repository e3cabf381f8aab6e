"""Stage One: the multi-view video diffusion model (MV-VDM), its sampler, features and 4D-SDS.

API (stable; the trainer in ``training/`` builds on it)
-------------------------------------------------------
``config.get_config("tiny" | "animate3d", **overrides) -> MVVDMConfig``
    ``tiny``: 64x64 images (8x8x4 latents), 4 views x 4 frames by default, random weights, CPU.
    ``animate3d``: SD1.5 widths, 256x256 (32x32x4 latents), 4 views x 16 frames.

``unet.MVVDM(config)`` — the U-Net (diffusers ``UNetMotionModel`` blocks, diffusers key names).
    ``model(sample, timestep, encoder_hidden_states, camera, image_embeds=None, use_i2v=True)``
      sample ``[B, V, F, 4, h, w]`` latents (already scaled by ``vae_scaling_factor``);
        frame 0 of every view is the conditional frame read by the MV2V adapter;
      timestep scalar / ``[B]`` / broadcastable to ``[B, V, F]`` (per-frame t allowed);
      encoder_hidden_states text embeddings ``[B, T, D]`` (or per view ``[B, V, T, D]``);
      camera ``[B, V, 16]`` or ``[V, 16]`` from ``camera_embed.camera_tensor(w2c_list)``;
      image_embeds optional IP-Adapter embeddings ``[B, V, ip_embed_dim]``.
      -> predicted noise ``[B, V, F, 4, h, w]``.
      Internally the batch is flattened (b, view, frame), frames innermost.
    ``model.get_trainable_parameters()`` / ``model.freeze_for_training()`` — MV2V adapter
      (``*_i2v``) + motion modules (temporal + spatial branch + alpha blender) only.
    ``model.enable_gradient_checkpointing()`` — per-block activation recomputation.
    ``weights.from_pretrained(name_or_folder, ...)`` / ``weights.save_pretrained(model, folder)``.

``components.build_components(config)`` -> ``Components(unet, vae, text_encoder, tokenizer)``;
    ``components.encode_text(comp, prompts)``, ``encode_images`` / ``decode_latents``.
    ``components.encode_image_embeds(comp, views)`` -> IP-Adapter embeddings ``[V, ip_embed_dim]``.
    Tiny tokenizer: ``ByteTokenizer`` (UTF-8 bytes -> ids 0..255, pad 256, bos 257, eos 258).

``features.FeatureHook(model, block=None -> config.feature_block ("up_blocks.1"))`` — context
    manager; ``hook.features`` holds that block's last motion-module output
    ``[B, V, F, C, h', w']`` of the latest forward (differentiable when grad is on);
    ``hook.channels()``.  ``features.sample_features`` / ``nearest_neighbour_tracks`` /
    ``probe_blocks`` (the paper's block-by-block tracking probe).

``pipeline.cond_noise_scale(t, sampler_config)`` — beta_t of paper eq. 2 (conditional frame
    noise ``z + beta_t * eps'``), for training too; ``pipeline.make_scheduler(sampler_config)``.

``pipeline.MVVDMPipeline(components, sampler_config).__call__(views, prompt, cameras, seed, ...)``
    views ``[V, 3, H, W]`` in [0, 1] (grey-composited RGB) -> videos ``[V, F, 3, H, W]`` in [0, 1]
    (+ features ``[V, F, C, h', w']``).

``sds.make_sds_fn(components, views, prompt, cameras, ...) -> sds_fn(renders [V,F,3,H,W], cameras=None) -> loss``
    (``cameras``: the V world->camera matrices or [V,16] vectors the renders came from; Stage Two
    passes its random SDS orbit, ``stage2.sds_cameras``).
``camera_embed.camera_tensor(w2cs)`` — [V,16] vectors in the released weights' convention (our
    world turned +90 degrees about Z: rig view i = the reference's view i).
``weights.convert_reference_unet`` / ``config_from_reference`` — the reference implementation's
    state dicts and U-Net configs in our names (tests/test_stage1_parity.py).
``run.run_stage1(job, reporter, work_dir) -> (videos [V,F,H,W,4], features | None, sds_fn | None)``
"""
