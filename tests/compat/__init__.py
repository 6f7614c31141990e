"""The official Airalo SDKs, unmodified but for their base URL, against the emulator."""
