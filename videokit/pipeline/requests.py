"""Building wire requests from a scene plan: the one place the story meets the protocol.

The runner uses these to submit jobs, and ``plan`` uses them to predict cache hits, so both agree
on what a scene's cache key is.
"""

from __future__ import annotations

from pathlib import Path

from videokit.backends.base import Stage
from videokit.media.images import fit_png
from videokit.protocol import AnimateRequest, EditRequest, MediaInput
from videokit.story.plan import ScenePlan, StoryPlan

__all__ = [
    "animate_request",
    "edit_request",
    "edited_frame",
    "payload_bounds",
    "request_params",
    "starting_frame",
]

# Room for everything in a job body but media and prompts: field names, numbers, the policy.
_ENVELOPE_BYTES = 4096
# JSON may spell one character of a prompt as a 12-byte surrogate pair escape.
_JSON_BYTES_PER_CHAR = 12


def starting_frame(plan: StoryPlan, scene: ScenePlan) -> bytes:
    """The first frame of a scene that starts from the reference or an image file: the image
    fitted to the frame size by the scene's ``fit`` (its own bytes when it already is that size,
    so a correctly sized image keeps its cache keys)."""
    path = _starting_image(plan, scene)
    return fit_png(path.read_bytes(), scene.width, scene.height, scene.fit)


def edited_frame(scene: ScenePlan, image: bytes) -> bytes:
    """An edit's result as the chain uses it: fitted to the frame size by the scene's ``fit``.
    An endpoint that makes only certain sizes (qwen-image-edit-2511: 1536x1080 for a 16:9
    frame) returns another size; one that returns the frame size keeps its bytes (and keys)."""
    return fit_png(image, scene.width, scene.height, scene.fit)


def _starting_image(plan: StoryPlan, scene: ScenePlan) -> Path:
    source = scene.source
    if source.kind == "reference":
        return plan.references[0]
    assert source.kind == "file" and source.path is not None
    return source.path


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
        audio=MediaInput.from_bytes(scene.audio.read_bytes()) if scene.audio is not None else None,
    )


def request_params(request: EditRequest | AnimateRequest) -> dict[str, object]:
    """A request's parameters without media, for the manifest."""
    return request.model_dump(mode="json", exclude={"image", "images", "outputs", "audio"})


def payload_bounds(plan: StoryPlan) -> dict[Stage, int]:
    """Per stage, an upper bound on the largest job body the render will send, in bytes.

    Files the story names are measured; a frame the pipeline makes itself (a last or an edited
    frame) is bounded by an incompressible RGB PNG of the story's size. With media inline as
    base64 this is what a backend with a payload limit needs to refuse a render up front.
    """
    made_frame = _base64_size(_png_bound(plan.width, plan.height))
    bounds: dict[Stage, int] = {}

    def bump(stage: Stage, size: int) -> None:
        bounds[stage] = max(bounds.get(stage, 0), size)

    for scene in plan.scenes.values():
        first = made_frame
        if scene.source.kind in ("reference", "file"):
            image = _starting_image(plan, scene)
            if plan.image_sizes.get(image) == (scene.width, scene.height):
                # Sent as it is, unless an EXIF rotation makes it a fitted PNG after all.
                first = max(first, _base64_size(image.stat().st_size))
        animated = first
        if scene.edit is not None:
            edit = scene.edit
            extras = sum(_base64_size(path.stat().st_size) for path in edit.images)
            bump("edit", first + extras + _text_size(edit.prompt, edit.negative_prompt))
            animated = made_frame
        audio = _base64_size(scene.audio.stat().st_size) if scene.audio is not None else 0
        bump("animate", animated + audio + _text_size(scene.motion, scene.negative_prompt))
    return bounds


def _png_bound(width: int, height: int) -> int:
    # Raw RGB rows with a filter byte each; deflate's stored blocks add 5 bytes per 64 KiB.
    raw = height * (width * 3 + 1)
    return raw + 5 * (raw // 65535 + 1) + 1024


def _base64_size(size: int) -> int:
    return 4 * ((size + 2) // 3)


def _text_size(*texts: str) -> int:
    return _ENVELOPE_BYTES + _JSON_BYTES_PER_CHAR * sum(len(text) for text in texts)
