import dataclasses

import pytest
import yaml

from zoo.config import ConfigError, config_from_dict, load_config, save_config


def test_defaults_resolve_base_knobs():
    cfg = config_from_dict({"algorithm": {"base": "dapo"}})
    a = cfg.algorithm
    assert (a.clip_low, a.clip_high, a.loss_agg, a.dynamic_sampling) == (0.2, 0.28, "token-mean", True)
    assert a.overlong_buffer == cfg.rollout.max_new_tokens // 5      # DAPO: 4096 of 20480
    g = config_from_dict({"algorithm": {"base": "grpo"}}).algorithm
    assert (g.clip_low, g.clip_high, g.loss_agg, g.dynamic_sampling, g.overlong_buffer) == \
        (0.2, 0.2, "seq-mean-token-mean", False, 0)


def test_unknown_key_names_path_and_nearest():
    with pytest.raises(ConfigError) as e:
        config_from_dict({"train": {"lrr": 0.1}})
    assert "train.lrr" in str(e.value) and "did you mean 'train.lr'" in str(e.value)
    with pytest.raises(ConfigError, match="rollout"):
        config_from_dict({"rolout": {}})


def test_wrong_type_names_path():
    with pytest.raises(ConfigError, match=r"train\.steps: expected int"):
        config_from_dict({"train": {"steps": "many"}})
    with pytest.raises(ConfigError, match=r"rollout\.temperature"):
        config_from_dict({"rollout": {"temperature": [1]}})


def test_set_overrides_and_yaml_values():
    cfg = config_from_dict({}, ["train.lr=3e-4", "rollout.group_size=4", "task.params.n_numbers=4",
                                "algorithm.strategies=[{name: identity}]"])
    assert cfg.train.lr == 3e-4 and cfg.rollout.group_size == 4 and cfg.task.params == {"n_numbers": 4}
    assert cfg.algorithm.strategies[0]["name"] == "identity"
    with pytest.raises(ConfigError, match="key=value"):
        config_from_dict({}, ["train.lr"])


def test_preset_expansion_and_explicit_keys_win():
    cfg = config_from_dict({"algorithm": {"preset": "top20", "clip_high": 0.3}})
    assert cfg.algorithm.base == "dapo" and cfg.algorithm.clip_high == 0.3
    assert cfg.algorithm.strategies[0]["name"] == "top_entropy" and cfg.algorithm.strategies[0]["rho"] == 0.2
    short = config_from_dict({"algorithm": "top20"})
    assert short.algorithm.strategies == config_from_dict({"algorithm": {"preset": "top20"}}).algorithm.strategies


def test_unknown_preset_base_strategy_and_param():
    with pytest.raises(ConfigError, match="did you mean 'top20'"):
        config_from_dict({"algorithm": {"preset": "top2O"}})
    with pytest.raises(ConfigError, match="did you mean 'dapo'"):
        config_from_dict({"algorithm": {"base": "dapoo"}})
    with pytest.raises(ConfigError, match=r"strategies\[0\]\.name.*did you mean 'top_entropy'"):
        config_from_dict({"algorithm": {"strategies": [{"name": "top_entrpy"}]}})
    with pytest.raises(ConfigError, match=r"strategies\[0\]\.rh.*did you mean 'algorithm.strategies\[0\]\.rho'"):
        config_from_dict({"algorithm": {"strategies": [{"name": "top_entropy", "rh": 0.2}]}})


def test_bad_values_are_errors():
    with pytest.raises(ConfigError, match="minibatches"):
        config_from_dict({"rollout": {"prompts_per_step": 6}, "train": {"minibatches": 4}})
    with pytest.raises(ConfigError, match="loss_agg"):
        config_from_dict({"algorithm": {"loss_agg": "sum"}})
    with pytest.raises(ConfigError, match="group_size"):
        config_from_dict({"rollout": {"group_size": 0}})


def test_two_policy_loss_replacements_rejected():
    from zoo.strategy import Strategy, register_strategy

    @register_strategy("_test_pl_a")
    class A(Strategy):
        replaces_policy_loss = True

    @register_strategy("_test_pl_b")
    class B(Strategy):
        replaces_policy_loss = True

    with pytest.raises(ConfigError, match="at most one"):
        config_from_dict({"algorithm": {"strategies": [{"name": "_test_pl_a"}, {"name": "_test_pl_b"}]}})


def test_plugins_register_strategy_from_outside_the_repo(tmp_path):
    plugin = tmp_path / "my_plugin.py"
    plugin.write_text(
        "from dataclasses import dataclass\n"
        "from zoo import Strategy, register_strategy\n"
        "@register_strategy('half_weight', description='halves every token weight')\n"
        "class Half(Strategy):\n"
        "    scale: float = 0.5\n"
        "    def token_weights(self, ctx):\n"
        "        return ctx.mask.float() * self.scale\n")
    cfg = config_from_dict({"plugins": [str(plugin)], "algorithm": {"strategies": [{"name": "half_weight", "scale": 0.25}]}})
    assert cfg.algorithm.strategies[0] == {"name": "half_weight", "scale": 0.25}
    with pytest.raises(ConfigError, match="does not exist"):
        config_from_dict({"plugins": [str(tmp_path / "missing.py")]})


def test_saved_config_round_trips(tmp_path):
    cfg = config_from_dict({"algorithm": {"preset": "eapo"}, "train": {"lr": 5e-5}})
    save_config(cfg, tmp_path / "config.yaml")
    again = load_config(tmp_path / "config.yaml")
    assert again == cfg
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["algorithm"]["base"] == "grpo"


def test_config_is_frozen():
    cfg = config_from_dict({})
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.train.lr = 1.0


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_incompatible_seed_combinations_are_config_errors():
    with pytest.raises(ConfigError, match="requires 'weighted-token-mean'"):
        config_from_dict({"algorithm": {"loss_agg": "token-mean",
                                        "strategies": [{"name": "top_entropy", "normalize": "selected"}]}})
    with pytest.raises(ConfigError, match="sampling temperatures"):
        config_from_dict({"algorithm": {"strategies": [{"name": "forking_temperature"},
                                                       {"name": "forking_temperature", "t_high": 1.5}]}})
    from zoo.objectives import BaseObjective, check_combination, build_strategies
    from zoo.registry import BASES
    import zoo.ops as ops

    BASES.add("_test_seq", BaseObjective("_test_seq", "", "", "token-mean", 0.2, 0.2, False, False,
                                         ops.grpo_advantages, sequence_level=True))
    algo = config_from_dict({"algorithm": {"strategies": [{"name": "top_entropy"}]}}).algorithm
    algo = dataclasses.replace(algo, base="_test_seq")
    with pytest.raises(ConfigError, match="sequence-level"):
        check_combination(algo, build_strategies(algo))


def test_composition_top_entropy_with_forking_temperature():
    cfg = config_from_dict({"algorithm": {"base": "dapo", "strategies": [
        {"name": "top_entropy", "rho": 0.2}, {"name": "forking_temperature", "t_high": 1.2}]}})
    assert [s["name"] for s in cfg.algorithm.strategies] == ["top_entropy", "forking_temperature"]


def test_truncated_training_sampler_is_rejected():
    with pytest.raises(ConfigError, match="full distribution"):
        config_from_dict({"rollout": {"top_p": 0.7}})
    with pytest.raises(ConfigError, match="full distribution"):
        config_from_dict({"rollout": {"top_k": 50}})
    assert config_from_dict({"eval": {"top_p": 0.7}}).eval.top_p == 0.7


def test_every_preset_spells_out_its_whole_base():
    from zoo.config import preset_files

    keys = {"base", "loss_agg", "clip_low", "clip_high", "kl_coef", "dynamic_sampling", "overlong_buffer",
            "overlong_penalty", "strategies"}
    for name, path in preset_files().items():
        algo = yaml.safe_load(path.read_text())["algorithm"]
        assert keys <= set(algo), f"{name} leaves {sorted(keys - set(algo))} to defaults"
