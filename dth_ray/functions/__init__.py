"""Cloud functions shipped with dth_ray (deployed on their own, outside the dth_ray package)."""
