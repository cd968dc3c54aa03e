"""Aliyun Function Compute forwarder of OSS events to SQS; the handler is index.handler (see README.md)."""
