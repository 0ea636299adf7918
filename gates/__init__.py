"""Gates: the pre-traffic validation suite (``gates.validation``) and metric gates."""
