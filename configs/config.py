"""The default config (`python train.py --config configs/config.py`): the seed's base experiment unchanged."""

from configs.base_config import DEVICE, N_CPU, exp_config

__all__ = ["DEVICE", "N_CPU", "exp_config"]
