"""Measuring what the generators draw: CLIP scores, named-entity probes, paradigm comparisons
and colorimetry, each written as one self-contained HTML report plus CSV and JSON.

The seed documents' questions, and the module that answers each:

- how well does an image match a text, absolutely and among candidates?  ``scores``
- does the model know this person or brand, when does a second face creep in?  ``probe``, ``faces``
- how do the paradigms compare on prompt sets and on COCO/Flickr30k captions?  ``compare``, ``datasets``
- what colours do they produce?  ``color``
- a prompt file at many seeds, unjudged?  ``batch``; any of these on Ray workers: ``ray_exec``

The judging CLIP (``judge``) is chosen apart from the one that guided the optimizer: a model
judging its own optimization target flatters it.
"""
