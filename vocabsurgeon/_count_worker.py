"""A word-counting worker process of :class:`vocabsurgeon.word_counts.CorpusCounter`:
``python -m vocabsurgeon._count_worker FD``, FD one end of a socket pair (see :func:`~vocabsurgeon.word_counts.serve`).
"""

import sys
from multiprocessing.connection import Connection

from .word_counts import serve

if __name__ == "__main__":
    serve(Connection(int(sys.argv[1])))
