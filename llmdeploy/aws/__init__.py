"""AWS calls (boto3) for the commands that act on real resources: finetune, reap.

Import this subpackage only from those commands: boto3 is imported inside
``llmdeploy.aws.clients`` functions, never by the planning path.
"""
