"""The Modal side of llmodal: the app ``modal deploy`` sends (``app``), what it is made of, and what
runs inside its containers."""
