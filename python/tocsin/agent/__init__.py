"""`tocsin agent`: the same engine probing from another network or region for a
central server (see `tocsin.agent.runner`)."""
