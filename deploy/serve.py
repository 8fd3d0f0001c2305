"""Ray Serve deployment of the online service: the same FastAPI app as `groundrec serve`
(`groundrec.online.service.create_app`), replicated and autoscaled by Ray Serve.

    serve run deploy/serve.yaml                      # from the repository root (serve run's --app-dir .)
    serve run deploy.serve:build_app artifacts=/srv/groundrec/artifacts
    serve deploy deploy/serve.yaml                   # a cluster of the offline image (/app on PYTHONPATH)

Here, not in the package: it imports Ray, which the online tier never does (its image has none).

Each replica loads the CURRENT version and hot-reloads on its own, exactly like one
`groundrec serve` process; arguments are ServeConfig fields (host/port are Ray Serve's).
"""

from __future__ import annotations

from ray import serve

from groundrec.online.config import ServeConfig

DEFAULT_AUTOSCALING = {"min_replicas": 1, "max_replicas": 4, "target_ongoing_requests": 8,
                       "upscale_delay_s": 10, "downscale_delay_s": 120}


def build_app(args: dict) -> serve.Application:
    """Serve application builder. ``args``: ServeConfig fields, plus optional ``num_replicas``
    (fixed) or ``autoscaling_config`` and ``num_cpus`` per replica."""
    args = dict(args)
    replicas = args.pop("num_replicas", None)
    autoscaling = args.pop("autoscaling_config", None)
    num_cpus = float(args.pop("num_cpus", 1))
    scaling = {"num_replicas": int(replicas)} if replicas else {"autoscaling_config": autoscaling or DEFAULT_AUTOSCALING}
    cfg = ServeConfig.model_validate(args)  # validated on the driver: a bad config fails before any replica starts

    def asgi_app():
        from groundrec.online.service import create_app

        return create_app(cfg)

    deployment = serve.deployment(
        serve.ingress(asgi_app)(),
        name="groundrec",
        **scaling,
        ray_actor_options={"num_cpus": num_cpus},
        health_check_period_s=10,
    )
    return deployment.bind()
