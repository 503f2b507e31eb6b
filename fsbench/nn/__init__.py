"""Shared torch building blocks: IResNet backbones (`iresnet`) and margin heads (`margin`).

Import the submodules directly (``from fsbench.nn.iresnet import get_model``); this package
stays import-cheap and does not pull torch in by itself.
"""
