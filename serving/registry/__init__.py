"""The Model Registry as the proxy reads and writes it, and what a version says of itself.

``base``: the operations, over any registry client, and the lookup's interface;
``lookup``: which store to ask and MLflow's own client in a helper process; ``rest``: an
http(s) tracking server over MLflow's REST API; ``model_facts``: a version's signature,
contract and example as the proxy uses them; ``webhooks``: the registry's alias events.
"""
