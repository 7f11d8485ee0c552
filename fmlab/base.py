"""The one parameter contract and the one estimator base of fmlab.

:class:`BaseParams` is scikit-learn's ``BaseEstimator`` (``get_params`` / ``set_params`` /
``clone`` / ``repr`` read the constructor's signature) with abc hooks, for objects that are
configured but never fitted: the attacks (:class:`~fmlab.attacks.BaseAttack`). Everything fitted
derives from :class:`BaseEstimator`, which adds the fitted state to it.

Scaling laws (:class:`~fmlab.scaling.BaseLaw`), OOD accuracy estimators
(:class:`~fmlab.ood.BaseOODEstimator`) and every estimator added later (reliance metrics, ...)
inherit :class:`BaseEstimator`, which is scikit-learn's ``BaseEstimator`` plus the three things
fmlab adds once for all of them:

- :meth:`BaseEstimator._check_params`: the hook that validates constructor arguments. It runs at
  the start of ``fit`` and in the registries' ``create_*`` factories, never in ``__init__`` (which
  only stores its arguments, so ``get_params`` / ``set_params`` / ``clone`` work).
- the not-fitted error: reading a fitted attribute (``name_``) or calling a method that needs the
  fit before ``fit`` raises :class:`~fmlab.exceptions.NotFittedError` with one message template.
- ``__sklearn_is_fitted__``, so ``sklearn.utils.validation.check_is_fitted`` agrees.

The contract (checked for every registered estimator by :mod:`fmlab.testing`):

- ``__init__`` stores its keyword arguments unchanged under the same names; nothing else.
- ``fit(...)`` validates parameters and inputs, sets attributes ending in ``_`` and returns
  ``self``; fitting twice on the same data gives the same result.
- Before ``fit``, fitted attributes raise :class:`~fmlab.exceptions.NotFittedError`.

Example:
    >>> from fmlab.base import BaseEstimator
    >>> class MeanShift(BaseEstimator):
    ...     _fit_call = "fit(x)"
    ...     def __init__(self, *, scale: float = 1.0) -> None:
    ...         self.scale = scale
    ...     def _check_params(self) -> None:
    ...         if self.scale <= 0:
    ...             raise ValueError(f"The 'scale' parameter of MeanShift must be > 0. "
    ...                              f"Got {self.scale!r} instead.")
    ...     def fit(self, x):
    ...         self._check_params()
    ...         self.mean_ = sum(x) / len(x) * self.scale
    ...         return self
    >>> MeanShift().fit([1.0, 3.0]).mean_
    2.0
    >>> MeanShift().mean_
    Traceback (most recent call last):
    ...
    fmlab.exceptions.NotFittedError: This MeanShift instance is not fitted yet; call fit(x) \
before reading 'mean_'.
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar

from sklearn.base import BaseEstimator as _SklearnBaseEstimator

from fmlab.exceptions import NotFittedError

__all__ = ["BaseEstimator", "BaseParams"]


class BaseParams(_SklearnBaseEstimator, metaclass=abc.ABCMeta):
    """scikit-learn's parameter contract for every configurable object in fmlab.

    ``__init__`` stores each constructor argument under its own name (validating it on the way,
    as ``torch.optim`` does, is allowed as long as the stored value is what ``get_params``
    should report); scikit-learn's ``get_params`` / ``set_params`` / ``clone`` / ``repr`` then
    work from the signature. Abstract hooks of a family base are :func:`abc.abstractmethod`.
    """


class BaseEstimator(BaseParams):
    """scikit-learn's ``BaseEstimator`` with fmlab's parameter hook and not-fitted errors.

    Subclasses set :attr:`_fitted_attr` (an attribute ``fit`` always sets) and :attr:`_fit_call`
    (how ``fit`` is called, for the error message), implement ``fit`` and, when they take
    parameters with constraints, :meth:`_check_params`. Family bases mark the hooks their members
    must implement with :func:`abc.abstractmethod`, so a class missing one cannot be instantiated.
    """

    #: An attribute ``fit`` always sets; its presence means "fitted".
    _fitted_attr: ClassVar[str] = ""
    #: How to call ``fit``, as shown in the not-fitted message.
    _fit_call: ClassVar[str] = "fit()"

    def _check_params(self) -> None:
        """Validate the constructor arguments; raise ``TypeError`` / ``ValueError`` naming them.

        Runs at the start of ``fit`` and in the ``create_*`` factories. The default accepts
        everything.
        """

    def _is_fitted(self) -> bool:
        if self._fitted_attr:
            return self._fitted_attr in vars(self)
        return any(k.endswith("_") and not k.startswith("_") for k in vars(self))

    def __sklearn_is_fitted__(self) -> bool:
        return self._is_fitted()

    def _not_fitted(self, what: str) -> NotFittedError:
        return NotFittedError(f"This {type(self).__name__} instance is not fitted yet; call "
                              f"{self._fit_call} before {what}.")

    def _check_fitted(self, method: str = "predict") -> None:
        """Raise :class:`~fmlab.exceptions.NotFittedError` unless ``fit`` has run."""
        if not self._is_fitted():
            raise self._not_fitted(f"{method}()")

    def __getattr__(self, name: str) -> Any:
        # Only reached when normal lookup fails. A public name ending in "_" is a fitted attribute
        # read before fit(); private and dunder names keep the plain AttributeError.
        if name.endswith("_") and not name.startswith("_"):
            raise self._not_fitted(f"reading {name!r}")
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
