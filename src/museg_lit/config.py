"""Compose the Hydra config outside ``@hydra.main`` (tests, notebooks, the eval runner's helpers).

Returns the same config ``python -m museg_lit.train`` would see, with ``hydra:`` interpolations
(run directory, cwd) bound, so ``${paths.output_dir}`` resolves.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"


def compose(overrides: Sequence[str] = (), *, config_name: str = "train", output_dir: str | Path | None = None) -> DictConfig:
    """Compose ``conf/<config_name>.yaml`` with ``overrides``; ``output_dir`` stands in for Hydra's run dir."""
    if not CONF_DIR.is_dir():
        raise FileNotFoundError(f"config directory {CONF_DIR} not found (install the project with `pip install -e .`)")
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = hydra_compose(config_name=config_name, overrides=list(overrides), return_hydra_config=True)
    OmegaConf.set_readonly(cfg.hydra, False)
    with open_dict(cfg.hydra):
        cfg.hydra.runtime.output_dir = str(output_dir or Path.cwd() / "outputs")
        cfg.hydra.runtime.cwd = str(Path.cwd())
        cfg.hydra.job.num = 0
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    OmegaConf.resolve(cfg)  # binds ${hydra:...} through the HydraConfig singleton set above
    return cfg
