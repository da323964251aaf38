"""Image-to-video inflation: an image checkpoint's U-Net weights loaded into the space-time U-Net by name.

The space-time U-Net keeps the image U-Net's parameter names (:mod:`.network`), so inflation is a name-and-shape match;
the temporal layers and the known-frame input are absent from the image checkpoint and keep their zero-initialised
outputs, so the inflated model starts as the image model applied frame by frame (Video Diffusion Models, AnimateDiff).
"""

from typing import Any

from polydiff.core.utils import PolydiffError


def inflate_image_weights(model: Any, checkpoint: dict[str, Any], path: str) -> list[str]:
    """Load the image U-Net weights of ``checkpoint`` (an image-domain polydiff checkpoint) into ``model.network``;
    return the model's keys left as initialised (the temporal layers, and tensors whose shapes differ)."""
    state = checkpoint["state_dict"]
    own = model.state_dict()
    matched = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    spatial = [k for k in state if k.startswith("network.")]
    mismatched = [k for k in spatial if k in own and own[k].shape != state[k].shape]
    if not matched or len(mismatched) > len(spatial) // 2:
        raise PolydiffError(f"image checkpoint {path} does not fit this video U-Net ({len(mismatched)} of "
                            f"{len(spatial)} tensors differ in shape, e.g. {mismatched[:2]}); use the image recipe's "
                            "--model.model_channels / channel_mult / num_res_blocks / attention_resolutions")
    model.load_state_dict(matched, strict=False)
    left = [k for k in own if k not in matched]
    temporal = sum(1 for k in left if k.startswith(("network.temporal_", "network.frame_cond_conv")))
    print(f"inflated {len(matched)} image tensors from {path}; {temporal} temporal tensors start at their "
          f"zero-initialised outputs" + (f"; kept as initialised: {mismatched}" if mismatched else ""))
    return left
