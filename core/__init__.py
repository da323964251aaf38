"""polydiff.core: the diffusion mathematics shared by every domain (no domain words here).

Parts: noise processes (:mod:`.processes`), parameterisations (:mod:`.parameterization`), the training objective
(:mod:`.objective`), step grids and samplers (:mod:`.grids`, :mod:`.samplers`, :mod:`.sampling`), guidance
(:mod:`.guidance`), inpainting (:mod:`.inpaint`), the LightningModule every domain builds on (:mod:`.module`) and the CLI.
"""

from polydiff.core.denoiser import Denoiser, NetworkDenoiser
from polydiff.core.export import export_checkpoint, load
from polydiff.core.processes import (
    PROCESSES,
    NoiseProcess,
    RectifiedFlow,
    VarianceExploding,
    VPCosine,
    VPLinear,
    process_by_name,
)
from polydiff.core.samplers import SAMPLERS
from polydiff.core.sampling import SamplerConfig, sample
from polydiff.core.utils import PolydiffError, append_dims

__all__ = [
    "Denoiser",
    "NetworkDenoiser",
    "NoiseProcess",
    "PROCESSES",
    "PolydiffError",
    "RectifiedFlow",
    "SAMPLERS",
    "SamplerConfig",
    "VPCosine",
    "VPLinear",
    "VarianceExploding",
    "append_dims",
    "export_checkpoint",
    "load",
    "process_by_name",
    "sample",
]
