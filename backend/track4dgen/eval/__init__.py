"""Evaluation: the paper's metrics and ground-truth metrics for synthetic objects.

``gt`` (weight-free: PSNR/SSIM, 3D centre error, Chamfer, track EPE), ``video`` (VBench-style
Table 1 metrics), ``clip4d`` (CLIP-O/F/C), ``backbones`` (DINO, CLIP, LAION head, AMT-S, RAFT and
their loaders), ``results`` (read/render a result), ``cli`` (``track4dgen eval``). Nothing is
imported here so that ``import track4dgen.eval.gt`` stays light.
"""
