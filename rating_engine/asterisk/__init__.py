"""The wire to Asterisk: FastAGI and AMI framing (pure), their servers/clients, the simulator."""
