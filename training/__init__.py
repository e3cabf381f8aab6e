"""Stage One trainer (paper §3.2): MV-VDM fine-tuning with diffusion + point-tracking losses.

Modules: ``data`` (Animate3D MV-Video format), ``write_mvvideo`` (synthetic data in that format),
``losses`` (L_diff, L_corr, L_pos), ``train`` (accelerate trainer), ``precompute_tracks``.
"""
