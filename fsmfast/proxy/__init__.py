"""The HTTP data plane: client and upstream protocols, routing, header rewriting."""
