"""Train, evaluate and export Facet's phenotype editing models: procedural faces, a factorised
generator with factor and image encoders, an attribute regressor and an identity embedding.

Paper: Yucer, Atapour-Abarghouei, Al Moubayed, Breckon, "Disentangling Racial Phenotypes:
Fine-Grained Control of Race-related Facial Phenotype Characteristics", after ConfigNet
(Kowalski et al., ECCV 2020).
"""
