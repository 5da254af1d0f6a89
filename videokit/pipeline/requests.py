"""Building wire requests from a scene plan: the one place the story meets the protocol.

The runner uses these to submit jobs, and ``plan`` uses them to predict cache hits, so both agree
on what a scene's cache key is.
"""

from __future__ import annotations

from pathlib import Path

from videokit.protocol import AnimateRequest, EditRequest, MediaInput
from videokit.story.plan import ScenePlan

__all__ = ["animate_request", "edit_request", "request_params"]


def edit_request(scene: ScenePlan, image: bytes) -> EditRequest:
    assert scene.edit is not None
    edit = scene.edit
    extra = [MediaInput.from_bytes(Path(p).read_bytes()) for p in edit.images]
    return EditRequest(
        images=[MediaInput.from_bytes(image), *extra],
        prompt=edit.prompt,
        negative_prompt=edit.negative_prompt,
        steps=edit.steps,
        true_cfg_scale=edit.guidance,
        seed=edit.seed,
        width=scene.width,
        height=scene.height,
    )


def animate_request(scene: ScenePlan, image: bytes) -> AnimateRequest:
    return AnimateRequest(
        image=MediaInput.from_bytes(image),
        prompt=scene.motion,
        negative_prompt=scene.negative_prompt,
        width=scene.width,
        height=scene.height,
        frames=scene.frames,
        fps=scene.fps,
        steps=scene.steps,
        guidance_scale=scene.guidance,
        guidance_scale_2=scene.guidance_2,
        seed=scene.seed,
    )


def request_params(request: EditRequest | AnimateRequest) -> dict[str, object]:
    """A request's parameters without media, for the manifest."""
    return request.model_dump(mode="json", exclude={"image", "images", "outputs"})
