"""Files the proxy writes that hold requests' data: private to their owner, rotated, written off the event loop."""
