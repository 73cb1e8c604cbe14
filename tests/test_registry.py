import pytest

from zoo.registry import Registry, UnknownNameError


@pytest.fixture
def reg():
    r = Registry("strategy")
    r._clear()
    return r


def test_register_and_get(reg):
    @reg.register("top_entropy")
    class A:
        pass

    assert reg.get("top_entropy") is A
    assert reg.names() == ["top_entropy"]


def test_unknown_name_lists_valid_and_nearest(reg):
    reg.add("top_entropy", object())
    reg.add("eapo", object())
    with pytest.raises(UnknownNameError) as e:
        reg.get("top_entropi")
    msg = str(e.value)
    assert "did you mean 'top_entropy'" in msg and "eapo" in msg and "top_entropi" in msg


def test_case_sensitive(reg):
    reg.add("eapo", object())
    with pytest.raises(KeyError):
        reg.get("EAPO")


def test_duplicate_with_different_object_rejected(reg):
    class A: ...
    class B: ...
    reg.add("x", A)
    reg.add("x", A)  # same object again is fine
    with pytest.raises(ValueError, match="already registered"):
        reg.add("x", B)


def test_freeze(reg):
    reg.freeze()
    with pytest.raises(RuntimeError):
        reg.add("y", object())


def test_builtin_registries_hold_the_seed_names():
    import algorithms  # noqa: F401
    import zoo.objectives  # noqa: F401
    from zoo.registry import BASES, STRATEGIES

    assert {"grpo", "dapo"} <= set(BASES.names())
    assert "identity" in STRATEGIES.names()


def test_reward_registry_unknown_name():
    from rewards import get_reward

    with pytest.raises(KeyError, match="did you mean 'countdown'"):
        get_reward("countdwn")
