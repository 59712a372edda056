"""Search: from a query to hits.

* :mod:`.query`: the query model (weighted terms, target, k, filters, fusion, re-ranking);
* :mod:`.fields`: the query's input fields, declared once for every surface;
* :mod:`.builder`: raw input (command line, JSON, keyword arguments) to a checked query;
* :mod:`.filters`: ``FIELD OP VALUE`` conditions compiled to SQL;
* :mod:`.embedding`: query terms to vectors (with the text cache), and second models;
* :mod:`.planning`: filtered vector search and keyword fusion;
* :mod:`.rerank`: re-ranking stages;
* :mod:`.searcher`: running a query end to end; :mod:`.hits`: the results;
* :mod:`.duplicates`: clusters of near-duplicate images.
"""

from .builder import build_query
from .hits import Hit
from .query import Hybrid, Query, Term

__all__ = ["Hit", "Hybrid", "Query", "Term", "build_query"]
