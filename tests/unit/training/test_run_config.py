"""Config system: defaults -> YAML -> overrides -> frozen config; unknown keys and wrong types raise."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from diffcast.config import (
    RunConfig,
    apply_overrides,
    config_from_dict,
    dump_config,
    find_preset,
    list_presets,
    load_config,
    parse_override,
)


def test_defaults_are_the_published_recipe():
    cfg = load_config()
    assert cfg.train.lr == 1e-4
    assert cfg.train.betas == (0.9, 0.95)
    assert cfg.train.grad_clip == 1.0
    assert cfg.train.mixed_precision == "no"
    assert cfg.logging.wandb is False and cfg.logging.csv and cfg.logging.tensorboard
    assert cfg.seq_len == cfg.model.t_in + cfg.model.t_out == 25


@pytest.mark.parametrize(
    "text, key, value",
    [
        ("train.lr=3e-4", ["train", "lr"], 3e-4),
        ("train.lr=1.0e-4", ["train", "lr"], 1e-4),
        ("train.max_steps=100", ["train", "max_steps"], 100),
        ("train.betas=[0.8, 0.99]", ["train", "betas"], [0.8, 0.99]),
        ("logging.wandb=true", ["logging", "wandb"], True),
        ("train.val_sampler_steps=null", ["train", "val_sampler_steps"], None),
        ("model.backbone={name: convgru, preset: tiny}", ["model", "backbone"], {"name": "convgru", "preset": "tiny"}),
        ("name=my run", ["name"], "my run"),
    ],
)
def test_parse_override_reads_yaml_scalars(text, key, value):
    assert parse_override(text) == (key, value)


@pytest.mark.parametrize("bad", ["train.lr", "=3", "train..lr=1", "train.lr=[1,"])
def test_parse_override_rejects_malformed(bad):
    with pytest.raises(ValueError):
        parse_override(bad)


def test_overrides_win_over_yaml_and_yaml_over_defaults(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("train:\n  lr: 2.0e-4\n  max_steps: 50\nmodel:\n  backbone: {name: convgru, preset: tiny}\n")
    cfg = load_config(path, ["train.max_steps=7", "model.backbone.hidden=[4, 8, 8]"])
    assert cfg.train.lr == 2e-4  # from YAML
    assert cfg.train.max_steps == 7  # override
    assert cfg.train.batch_size == 16  # default
    assert cfg.model.backbone == {"name": "convgru", "preset": "tiny", "hidden": [4, 8, 8]}
    assert cfg.model_dict()["backbone"]["hidden"] == [4, 8, 8]


@pytest.mark.parametrize(
    "override, key",
    [
        ("train.lrr=1", "train.lrr"),
        ("foo=1", "foo"),
        ("model.backbone_name=x", "model.backbone_name"),
        ("data.kwargs=3", "data.kwargs"),
        ("train.lr=fast", "train.lr"),
        ("train.max_steps=1.5", "train.max_steps"),
        ("train.max_steps=true", "train.max_steps"),
        ("train.mixed_precision=fp8", "train.mixed_precision"),
        ("train.betas=[0.9]", "train.betas"),
        ("logging.csv=1", "logging.csv"),
        ("model.type=gan", "model.type"),
        ("train=3", "train"),
    ],
)
def test_unknown_keys_and_wrong_types_name_the_key(override, key):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        load_config(None, [override])


@pytest.mark.parametrize(
    "override, words",
    [
        ("train.batch_size=0", "train.batch_size"),
        ("train.lr=0", "train.lr"),
        ("train.ema_decay=1.0", "train.ema_decay"),
        ("data.seq_len=10", "data.seq_len"),
        ("data.val_split=test", "test split"),
        ("train.min_lr=1", "min_lr"),
        ("model.backbone={preset: tiny}", "backbone.name"),
    ],
)
def test_invalid_values_raise(override, words):
    with pytest.raises(ValueError, match=words):
        load_config(None, [override])


def test_yaml_error_names_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  lr: fast\n")
    with pytest.raises(ValueError, match="bad.yaml.*train.lr"):
        load_config(path)
    path.write_text("- a\n- b\n")
    with pytest.raises(ValueError, match="mapping"):
        load_config(path)


def test_config_is_frozen_and_round_trips():
    cfg = load_config(None, ["train.max_steps=9", "model.backbone.preset=tiny", "data.kwargs.size=64"])
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.train.lr = 1.0  # type: ignore[misc]
    d = cfg.to_dict()
    assert d["train"]["betas"] == [0.9, 0.95]  # plain lists, YAML/JSON friendly
    assert config_from_dict(d) == cfg
    assert config_from_dict(yaml.safe_load(dump_config(cfg))) == cfg
    # to_dict is a copy: mutating it does not touch the frozen config
    d["model"]["backbone"]["preset"] = "paper"
    assert cfg.model.backbone["preset"] == "tiny"
    assert cfg.replace(["train.lr=0.5"]).train.lr == 0.5 and cfg.train.lr == 1e-4


def test_apply_overrides_refuses_to_descend_into_a_value():
    with pytest.raises(ValueError, match="not a section"):
        apply_overrides({"train": {"lr": 1.0}}, ["train.lr.x=1"])


def test_seq_len_derived_and_explicit():
    assert load_config(None, ["model.t_in=4", "model.t_out=6"]).seq_len == 10
    assert load_config(None, ["model.t_in=4", "model.t_out=6", "data.seq_len=12"]).seq_len == 12


def test_presets_are_found_by_name():
    names = list_presets()
    assert {"tiny_convgru", "tiny_diffcast_convgru", "tiny_diffcast_persistence"} <= set(names)
    assert find_preset("tiny_convgru").name == "tiny_convgru.yaml"
    with pytest.raises(FileNotFoundError, match="tiny_convgru"):
        find_preset("no_such_preset")


def test_run_config_defaults_are_independent():
    a, b = RunConfig(), RunConfig()
    assert a.model.backbone is not b.model.backbone


def test_preset_backbone_replaces_default_kwargs_but_section_keys_merge(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("model:\n  backbone: {name: convgru}\ntrain:\n  lr: 0.001\n")
    cfg = load_config(path, ["model.backbone.preset=tiny"])
    assert cfg.model.backbone == {"name": "convgru", "preset": "tiny"}
    assert cfg.model.t_out == 20 and cfg.train.lr == 1e-3 and cfg.train.batch_size == 16
