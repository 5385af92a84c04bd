# One image for every Yiwang process; the command picks the service (see docker-compose.yml).
FROM python:3.11-slim
WORKDIR /app
COPY requirements.lock .
RUN pip install --no-cache-dir -r requirements.lock
COPY config.yml ./
COPY contracts ./contracts
COPY services ./services
COPY gateway ./gateway
ENV PYTHONPATH=/app PYTHONUNBUFFERED=1
USER nobody
CMD ["nameko", "run", "--config", "config.yml", "gateway.service:Gateway"]
