"""Running trials across processes and machines: tickets in a queue (``queue``) that any
worker claims, who owns which (``owners``), heartbeats (``heartbeats``), the ``--jobs``
processes (``jobs``), a prepared search or a worker's view of one (``session``), and
running a search's or a worker's trials to the end (``runner``)."""
