"""A mini DALL-E world that ships inside clipdraw: procedural data, tiny trained models, a judge."""
