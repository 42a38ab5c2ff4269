"""Convert the authors' published DiffCast checkpoint into our model file.

The published ``diffcast_phydnet_sevir128.pt`` is a ``torch.save`` dict with
``step``, ``epoch``, ``model`` (state dict), ``ema`` (an ema-pytorch state:
``initted``, ``step``, ``ema_model.<name>``, ``online_model.<name>``), ``opt``
and ``scheduler``. It is read with ``torch.load(weights_only=True)`` (no
arbitrary unpickling). Our module names equal the published ones, so the
mapping only

- drops the 13 schedule buffers (after checking that they agree with the
  schedule our config recomputes: a file trained with another schedule is
  refused rather than silently mis-sampled). The sigmoid schedule exists in two
  arithmetics that differ by ~1e-5 (``sigmoid``: float64 throughout, ours;
  ``sigmoid_official``: the original's float32 end points); a file whose
  buffers match the other variant is converted with that one, so the model
  samples with exactly the file's schedule;
- resolves PhyDNet's aliased cells (registered twice, under ``phycell`` /
  ``convcell`` and ``encoder.phycell`` / ``encoder.convcell``): aliased tensors
  must be equal; a name our model lacks is dropped, a name only the alias has is
  filled from it;
- checks every remaining name and shape against the model our config builds.

The result is written with :func:`diffcast.training.model_io.save_model_file`
and loads with ``Nowcaster.from_checkpoint``.
"""

from __future__ import annotations

import copy
import logging
import os
import pickle
from pathlib import Path
from typing import Any

import torch

from ...data.transforms import SEVIR_META
from .schedules import BUFFER_NAMES, SIGMOID_VARIANTS, schedule_buffers

log = logging.getLogger(__name__)

WEIGHTS = ("model", "ema")

#: The published configuration: PhyDNet backbone, SEVIR VIL 5 -> 20 at 128 x 128,
#: DDIM with 250 steps on the original respacing, and the original's arithmetic of the
#: sigmoid noise schedule (float32 end points; see ``sigmoid_official_beta_schedule``).
OFFICIAL_CONFIG: dict[str, Any] = {
    "name": "diffcast_phydnet_sevir128",
    "data": {"name": "sevir"},
    "model": {
        "type": "diffcast",
        "t_in": 5,
        "t_out": 20,
        "channels": 1,
        "height": 128,
        "width": 128,
        "backbone": {"name": "phydnet", "preset": "paper"},
        "diffusion": {
            "preset": "paper",
            "schedule": "sigmoid_official",
            "sampler": "ddim",
            "sampling_steps": 250,
            "eta": 0.0,
            "timestep_spacing": "diffcast",
        },
    },
}

#: Name prefixes that denote the same tensors in the published PhyDNet (``alias_of`` in the listing).
ALIAS_PREFIXES: tuple[tuple[str, str], ...] = (
    ("backbone_net.encoder.phycell.", "backbone_net.phycell."),
    ("backbone_net.encoder.convcell.", "backbone_net.convcell."),
)


def official_config() -> dict[str, Any]:
    """A copy of :data:`OFFICIAL_CONFIG` (the config stored in a converted file)."""
    return copy.deepcopy(OFFICIAL_CONFIG)


def load_official_checkpoint(src: str | os.PathLike[str]) -> dict[str, Any]:
    """Read the published checkpoint safely (``weights_only=True``).

    Raises
    ------
    FileNotFoundError
        If ``src`` does not exist.
    ValueError
        If the file cannot be read as tensors-only, or is not a dict with a
        ``model`` state dict.
    """
    src = Path(src)
    if not src.is_file():
        raise FileNotFoundError(f"checkpoint {src} does not exist")
    try:
        ckpt = torch.load(src, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ValueError(
            f"{src} could not be loaded with torch.load(weights_only=True): it contains pickled objects "
            f"other than tensors and plain containers (typically in its 'opt' or 'scheduler' entries). "
            f"We do not unpickle arbitrary objects. Re-save only the weights in a trusted environment, e.g. "
            f"torch.save({{'model': ckpt['model'], 'ema': ckpt['ema']}}, 'weights.pt'), and convert that. "
            f"Loader said: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
        ) from exc
    except Exception as exc:  # not a torch.save file at all (zip / legacy format errors vary)
        raise ValueError(f"{src} is not a PyTorch checkpoint readable by torch.load: {exc}") from exc
    if not isinstance(ckpt, dict):
        raise ValueError(f"{src} is not a DiffCast training checkpoint: expected a dict, got {type(ckpt).__name__}")
    if not isinstance(ckpt.get("model"), dict) or not ckpt["model"]:
        raise ValueError(
            f"{src} is not a DiffCast training checkpoint: it has no 'model' state dict "
            f"(top-level keys: {', '.join(map(str, list(ckpt)[:10])) or 'none'})"
        )
    return ckpt


def extract_weights(ckpt: dict[str, Any], weights: str = "model", src: str = "checkpoint") -> dict[str, torch.Tensor]:
    """The raw state dict of the chosen weights (``model`` or EMA ``ema_model.*``)."""
    if weights not in WEIGHTS:
        raise ValueError(f"weights must be one of {', '.join(WEIGHTS)}, got {weights!r}")
    if weights == "model":
        sd = ckpt["model"]
    else:
        ema = ckpt.get("ema")
        if not isinstance(ema, dict):
            raise ValueError(f"{src} has no 'ema' entry; convert with --weights model")
        sd = {k[len("ema_model.") :]: v for k, v in ema.items() if k.startswith("ema_model.")}
        if not sd:
            raise ValueError(f"{src}: its 'ema' entry has no 'ema_model.*' tensors (keys: {', '.join(list(ema)[:8])})")
    bad = [k for k, v in sd.items() if not torch.is_tensor(v)]
    if bad:
        raise ValueError(f"{src}: {weights} entries that are not tensors: {', '.join(map(str, bad[:8]))}")
    if all(k.startswith("module.") for k in sd):  # saved from a DistributedDataParallel wrapper
        sd = {k[len("module.") :]: v for k, v in sd.items()}
    return dict(sd)


def _diffusion_settings(diffusion_cfg: dict[str, Any]) -> dict[str, Any]:
    """The diffusion config with its preset's defaults filled in."""
    from .residual import PRESETS

    return {**PRESETS[diffusion_cfg.get("preset", "paper")], **diffusion_cfg}


def _check_schedule(sd: dict[str, torch.Tensor], diffusion_cfg: dict[str, Any], src: str) -> str:
    """The schedule name whose buffers the file carries: the config's or the other sigmoid variant.

    ``betas`` and ``alphas_cumprod`` (where present) are compared, as float32,
    with those of the config's schedule and, for a sigmoid schedule, of the
    other sigmoid arithmetic. A bit-exact match wins over a match within
    ``rtol=1e-5`` (for short schedules the two variants agree that closely);
    the config's schedule wins ties. A file without these buffers keeps the
    config's schedule.

    Raises
    ------
    ValueError
        If no candidate matches: the file was trained with another schedule.
    """
    cfg = _diffusion_settings(diffusion_cfg)
    configured = cfg["schedule"]
    names = [name for name in ("betas", "alphas_cumprod") if name in sd]
    if not names:
        return configured
    candidates = [configured]
    if configured in SIGMOID_VARIANTS:
        candidates += [v for v in SIGMOID_VARIANTS if v != configured]
    theirs = {name: sd[name].detach().float().cpu() for name in names}
    ours = {
        c: schedule_buffers(c, int(cfg["timesteps"]), cfg["objective"], cfg["min_snr_gamma"]) for c in candidates
    }

    def mismatch(candidate: str, exact: bool) -> str | None:
        """The first buffer that differs from ``candidate``'s, or None."""
        for name in names:
            a, b = theirs[name], ours[candidate][name]
            if a.shape != b.shape or not (
                torch.equal(a, b) if exact else torch.allclose(a, b, rtol=1e-5, atol=1e-7)
            ):
                return name
        return None

    for exact in (True, False):
        for candidate in candidates:
            if mismatch(candidate, exact) is None:
                if candidate != configured:
                    log.info(
                        "%s: its schedule buffers are those of the %r schedule, not of the config's %r "
                        "(the two sigmoid arithmetics); converting with %r",
                        src,
                        candidate,
                        configured,
                        candidate,
                    )
                return candidate
    mismatched = mismatch(configured, exact=False)
    raise ValueError(
        f"{src}: its '{mismatched}' buffer does not match the {configured} schedule with "
        f"{cfg['timesteps']} steps of the target config; the checkpoint was trained with "
        "another noise schedule"
    )


def map_state_dict(
    sd: dict[str, torch.Tensor],
    target: dict[str, torch.Tensor],
    src: str = "checkpoint",
    buffers: set[str] | None = None,
) -> dict[str, torch.Tensor]:
    """Map a published state dict onto our names; verify names and shapes.

    Parameters
    ----------
    sd : dict
        Published names -> tensors (schedule buffers may be present).
    target : dict
        Our model's ``state_dict()`` (names and shapes to reach).
    src : str
        Label for error messages.
    buffers : set of str, optional
        Names in ``target`` that are derived buffers; those missing from ``sd``
        are taken from ``target`` (with a log message) instead of failing.

    Raises
    ------
    ValueError
        On aliased tensors that differ, unknown or missing names, or shape
        mismatches (the message lists the first offenders).
    """
    sd = {k: v for k, v in sd.items() if k not in BUFFER_NAMES}
    # resolve aliases
    for a_pre, b_pre in ALIAS_PREFIXES:
        for key in [k for k in list(sd) if k.startswith(a_pre)] + [k for k in list(sd) if k.startswith(b_pre)]:
            if key not in sd:
                continue
            twin = b_pre + key[len(a_pre) :] if key.startswith(a_pre) else a_pre + key[len(b_pre) :]
            if twin in sd:
                if sd[key].shape != sd[twin].shape or not torch.equal(sd[key], sd[twin]):
                    raise ValueError(f"{src}: aliased tensors {key} and {twin} differ; the file is inconsistent")
                if key not in target and twin in target:
                    del sd[key]
            elif key not in target and twin in target:
                sd[twin] = sd.pop(key)
        for key in list(target):
            for pre, other in ((a_pre, b_pre), (b_pre, a_pre)):
                if key.startswith(pre) and key not in sd:
                    twin = other + key[len(pre) :]
                    if twin in sd:
                        sd[key] = sd[twin]
    unexpected = sorted(set(sd) - set(target))
    missing = sorted(set(target) - set(sd))
    filled = [k for k in missing if buffers and k in buffers]
    missing = [k for k in missing if k not in filled]
    if unexpected or missing:
        raise ValueError(
            f"{src} does not match the DiffCast model: {len(missing)} missing tensor(s) "
            f"({', '.join(missing[:6])}{', ...' if len(missing) > 6 else ''}), {len(unexpected)} unexpected "
            f"({', '.join(unexpected[:6])}{', ...' if len(unexpected) > 6 else ''})"
        )
    for k in filled:
        log.info("%s: buffer %s not in the file; using the recomputed value", src, k)
        sd[k] = target[k]
    wrong = [f"{k}: {tuple(sd[k].shape)} vs {tuple(target[k].shape)}" for k in target if sd[k].shape != target[k].shape]
    if wrong:
        raise ValueError(f"{src}: tensor shapes differ from the model (file vs ours): {'; '.join(wrong[:6])}")
    return {k: sd[k].detach().to(dtype=target[k].dtype).contiguous() for k in target}


def convert_official(
    src: str | os.PathLike[str],
    out: str | os.PathLike[str],
    weights: str = "model",
    config: dict[str, Any] | None = None,
) -> Path:
    """Convert the published DiffCast checkpoint to a diffcast model file.

    Parameters
    ----------
    src : path-like
        The authors' ``diffcast_phydnet_sevir128.pt``.
    out : path-like
        Output ``.safetensors`` file (written atomically).
    weights : {"model", "ema"}
        Which weights to convert; the published evaluation uses ``model``.
    config : dict, optional
        Full config to store (default :func:`official_config`); its ``model``
        section must describe the network in the file. If the file's schedule
        buffers are those of the other sigmoid arithmetic (``sigmoid`` vs
        ``sigmoid_official``), the stored config names that one instead.

    Returns
    -------
    Path
        ``out``.
    """
    from ...training.model_io import save_model_file
    from ..factory import build_model

    src = Path(src)
    out = Path(out)
    if out.suffix != ".safetensors":
        raise ValueError(f"output file must end in .safetensors, got {out}")
    config = official_config() if config is None else copy.deepcopy(config)
    ckpt = load_official_checkpoint(src)
    sd = extract_weights(ckpt, weights, str(src))
    diffusion_cfg = dict(config["model"].get("diffusion") or {})
    schedule = _check_schedule(sd, diffusion_cfg, str(src))
    if schedule != _diffusion_settings(diffusion_cfg)["schedule"]:
        # store the schedule the file was trained with, so the converted model samples with it
        config["model"]["diffusion"] = {**diffusion_cfg, "schedule": schedule}
    model = build_model(config["model"])
    target = model.state_dict()
    state = map_state_dict(sd, target, str(src), buffers={k for k, _ in model.named_buffers()})
    model.load_state_dict(state, strict=True)
    step = ckpt.get("step")
    extra = {"weights": weights, "source": src.name, "converted_from": "official DiffCast checkpoint"}
    if step is not None:
        extra["step"] = str(int(step)) if isinstance(step, (int, float)) or torch.is_tensor(step) else str(step)
    save_model_file(out, state, config, meta=SEVIR_META.as_dict(), extra=extra)
    log.info("converted %s (%s weights, %d tensors) -> %s", src, weights, len(state), out)
    return out
