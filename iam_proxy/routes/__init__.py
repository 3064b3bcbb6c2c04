"""Routes: the request -> route table. Exactly one route must match; none is 404, several are 500."""
