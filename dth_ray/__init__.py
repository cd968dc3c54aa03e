"""dth_ray: a Ray-based, verifying, resumable object-storage mover into Amazon S3."""

__version__ = "0.1.0"
