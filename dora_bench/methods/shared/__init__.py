"""What the methods share, none of it a method: where a module sits in the rank grid
(``allocation``), cheap input dropout (``dropout``), the layers an adapter can wrap (``linears``)."""
