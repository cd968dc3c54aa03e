"""Planning from bucket inventories (S3 Inventory, OSS bucket inventory) instead of listing the source."""
