"""Every taggable resource carries llmdeploy's base tags (managed-by, stack, mode, owner, cost centre)."""

import pytest

from llmdeploy import tags as tag_keys

from .mocks import COST_CENTER, MODES, OWNER, custom, is_taggable, one, run_mode


def _expected(mode: str) -> dict:
    return tag_keys.base_tags(stack=f"test-{mode}", mode=mode, owner=OWNER, cost_center=COST_CENTER)


@pytest.mark.parametrize("mode", MODES)
def test_every_taggable_resource_carries_managed_by_llmdeploy(mode):
    mocks = run_mode(mode)
    expected = _expected(mode)
    checked = 0
    for res in custom(mocks):
        if not is_taggable(res.type):
            continue
        checked += 1
        tags = res.inputs.get("tags")
        if res.type == "aws:autoscaling/group:Group":  # ASGs take a list of {key, value, propagateAtLaunch}
            tags = {t["key"]: t["value"] for t in tags or [] if t.get("propagateAtLaunch")}
        assert tags, f"every taggable resource carries managed-by=llmdeploy: {res.type} {res.name} has no tags"
        assert tags.get(tag_keys.MANAGED_BY) == tag_keys.MANAGED_BY_VALUE, (
            f"every taggable resource carries managed-by=llmdeploy: {res.type} {res.name}")
        assert {k: tags.get(k) for k in expected} == expected, f"{res.type} {res.name} must carry the stack's base tags"
    assert checked >= 5


def test_instances_and_volumes_launched_by_the_asg_are_tagged():
    template = one(run_mode("reserved"), "aws:ec2/launchTemplate:LaunchTemplate")
    kinds = {spec["resourceType"]: spec["tags"] for spec in template.inputs["tagSpecifications"]}
    assert set(kinds) >= {"instance", "volume"}
    for tags in kinds.values():
        assert tags[tag_keys.MANAGED_BY] == tag_keys.MANAGED_BY_VALUE
