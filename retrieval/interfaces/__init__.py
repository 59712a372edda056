"""The surfaces over :class:`retrieval.Collection`: the command line (:mod:`.cli`), the HTTP
service and web page (:mod:`.server`, ``web/``), and a client for the service (:mod:`.client`).
No logic lives only in a surface."""
