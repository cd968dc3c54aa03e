"""How bytes move: copy one object (single PUT or pipelined multipart) with bounded memory and retries."""
