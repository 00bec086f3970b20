# Transformer X-Ray in a container: the same install steps as the README (scripts/setup.sh).
# Build: docker build -t transformer-xray .
# Run:   docker run -p 7860:7860 -v xray-cache:/home/user/.cache transformer-xray
FROM python:3.11-slim

# Hugging Face Spaces (Docker SDK) and good practice: run as uid 1000, not root.
RUN useradd --create-home --uid 1000 user
USER user
ENV HOME=/home/user \
    PATH=/home/user/app/.venv/bin:$PATH \
    HF_HOME=/home/user/.cache/huggingface \
    XRAY_CACHE=/home/user/.cache/transformer-xray \
    GRADIO_ANALYTICS_ENABLED=False \
    MPLCONFIGDIR=/tmp/matplotlib \
    PYTHONUNBUFFERED=1
WORKDIR /home/user/app

# Dependencies first (cached layer), then the code.
COPY --chown=user constraints.txt requirements.txt requirements-dev.txt ./
COPY --chown=user scripts/setup.sh scripts/setup.sh
# Optional: --build-arg XRAY_TORCH_INDEX_URL=<a CPU-only torch index> for a small CPU image.
ARG XRAY_TORCH_INDEX_URL=
RUN XRAY_TORCH_INDEX_URL="$XRAY_TORCH_INDEX_URL" bash scripts/setup.sh
COPY --chown=user . .

# Model weights (hub downloads, tiny offline builds) live in a volume, not in the image.
RUN mkdir -p /home/user/.cache
VOLUME ["/home/user/.cache"]
EXPOSE 7860
CMD ["python", "app.py", "--host", "0.0.0.0", "--port", "7860"]
