"""The paper's 1-D toy problem (§5.1): x ~ N(theta, sigma^2), reward g(x) = x^2 on [0, 1].

``pkpo-toy`` (or ``python -m pkpo.toy``) regenerates Figures 1, 2, 4 and 5 and a short
policy-gradient training run; settings live in ``conf/toy.yaml`` (package ``pkpo.conf``).
"""
