"""LEAF: label-efficient quality scoring with a vision-language teacher and a lightweight student."""
