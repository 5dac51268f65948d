# The reference service's image with a stop signal copied from an nginx or php-fpm image: the
# kubelet sends SIGQUIT, which uvicorn has no handler for; as PID 1 it never sees it and waits
# for SIGKILL at the grace deadline. Remove STOPSIGNAL (uvicorn drains on SIGTERM, the default).
FROM python:3.12-slim
WORKDIR /srv
COPY pyproject.toml .
COPY app app
RUN pip install --no-cache-dir ".[reference]"
STOPSIGNAL SIGQUIT
CMD ["uvicorn", "app.main:app", "--host", "0.0.0.0", "--port", "8000", "--timeout-graceful-shutdown", "4"]
