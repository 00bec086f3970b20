"""Scaling out: the model tier on Ray Serve (deployments, serve_app) and the front's choice of
backend (backend: in-process by default, Ray by configuration). Only `scale.deployments` and
`scale.serve_app` import Ray."""
