"""Medical images: NIfTI slices and volumes, synthesis, super-resolution and inpainting with the geometry kept.

``MedicalDiffusion`` (:mod:`.module`) on the N-d U-Net (:mod:`.unet`); NIfTI and PNG writers (:mod:`.io`); affines of
refined grids (:mod:`.geometry`); metrics and controls (:mod:`.metrics`, :mod:`.controls`, :mod:`.evaluation`); what
the model expects of its data (:mod:`.protocol`). The readers live with the data: ``polydiff.datasets.medical``.
"""

from polydiff.domains.medical.module import MedicalDiffusion
from polydiff.domains.medical.protocol import MedicalData

__all__ = ["MedicalData", "MedicalDiffusion"]
