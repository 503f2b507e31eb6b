"""Shared training machinery: seeding, device/AMP, torchrun/DDP, checkpoints, configs, data.

Each concern is one small module (`seed`, `device`, `dist`, `checkpoint`, `config`, `data`);
`fr` is the face-recognition training loop built from them. Nothing here starts a process
group or touches a GPU at import time.
"""
