"""The policy pack's entry point: Pulumi's Python analyzer runs this file (``python -m pulumi.policy``).

    pulumi preview -s dev --policy-pack policy
    pulumi up -s dev --policy-pack policy --policy-pack-config policy/budget.example.json

It serves the policies of llmdeploy.policy.guardrails to the engine over gRPC until the engine stops it.
"""

from pulumi_policy import PolicyPack

from llmdeploy.policy.guardrails import ENFORCEMENT, PACK_NAME, POLICIES

PolicyPack(name=PACK_NAME, enforcement_level=ENFORCEMENT, policies=POLICIES,
           description="llmdeploy's guardrails: IMDSv2, encryption at rest, no world-open SSH or plain HTTP, "
                       "llmdeploy tags, the monthly budget.")
