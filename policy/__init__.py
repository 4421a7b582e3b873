"""llmdeploy's policy pack (Pulumi CrossGuard): ``pulumi preview --policy-pack policy``. See guardrails.py."""
