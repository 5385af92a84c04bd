"""Building blocks every Yiwang service uses: storage, events, errors, telemetry."""
