"""IVF on disk, for collections whose vectors do not fit the memory budget.

The index is a list of immutable **segments** plus a small in-memory **delta**:

* a segment is one directory: ``ivf.index`` (FAISS metadata: the trained coarse quantizer and
  codec), ``ivf.ivfdata`` (FAISS ``OnDiskInvertedLists``: the compressed codes and ids of every
  cell), ``ids.npy`` (its ids, ascending) and ``vectors.npy`` (their float32 vectors, same
  order). Searches memory-map all four, so they cost page cache rather than process memory.
  A segment written by a spill of the delta holds ordinary inverted lists (``ivf.index`` only)
  until the next save merges it;
* vectors added after a build go to the delta (the same trained quantizer and codec, in RAM);
  when it grows past ``delta_max`` vectors it is written out as a segment;
* removing an id from a segment records a tombstone, applied at query time with a FAISS id
  selector; an upsert is a tombstone plus an add to the delta.

Segments are never changed in place: ``add_with_ids`` on FAISS's on-disk lists corrupts them
(faiss issue #3498). :meth:`OnDiskIVFIndex.compact` (and a save, when tombstones pass a quarter
of a segment or segments pile up) re-merges into a new directory, written under a temporary
name, synced and renamed; the manifest's rename is the commit point (``persistence``).

Candidates come from the compressed codes (``sq8``, the default: one byte per dimension, close
enough to exact that few candidates need re-scoring; ``pq``: 8-bit product quantisation with
``dim / 8`` sub-quantizers, smaller but coarse; ``flat``: float32), and the best
``k * k_factor`` are re-scored exactly from the memory-mapped float32 vectors. Their rows are
scattered over a file larger than the page cache, so they are requested from the kernel all at
once (``MADV_WILLNEED``) before they are read: one disk round trip rather than one per row.

Large builds go through :func:`build_ondisk`: the coarse quantizer and codec are trained once
on a sample, shards are encoded in parallel worker processes (one FAISS thread each, or any
``runner``, such as Ray tasks) and merged into one on-disk segment with
``faiss.contrib.ondisk.merge_ondisk``.
"""

from .build import Runner, build_ondisk, process_runner, ray_runner
from .segments import CODECS, Segment, pq_subquantizers, quiet_stdout
from .tier import OnDiskIVFIndex

__all__ = ["CODECS", "OnDiskIVFIndex", "Runner", "Segment", "build_ondisk", "pq_subquantizers",
           "process_runner", "quiet_stdout", "ray_runner"]
