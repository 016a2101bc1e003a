"""Train, evaluate and export Facet's paraphrase generators (DDL, VSAR, DDL+VSAR, KRL).

Paper: Yu, Cristea, Harit, Sun, Aduragba, Shi, Al Moubayed, "Language as a Latent Sequence: deep
latent variable models for semi-supervised paraphrase generation".
"""
