"""Real local servers for tests, the demo and benchmarks, importable without pytest.

Import the module you need (nothing is imported eagerly, so one server's dependencies never load another's):
`tests.servers.s3_servers` (moto, rclone serve s3, boto3 helpers) and `tests.servers.oss_server` (an OSS
protocol endpoint).
"""
