"""Tables and figures from the metrics the other stages wrote."""
