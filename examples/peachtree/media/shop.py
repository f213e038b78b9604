"""The facts the media rows are built from: catalog.csv, policies.md and a small table of checkout errors.

Every answer a row gives is assembled here from a catalog row or a policies.md line (looked up by a
phrase, so an edited policy flows into the answers and a removed one stops the generator with the
file and section named). Only the checkout errors are invented, and they live in one table below.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

from tunewright.errors import TunewrightError

CATALOG_COLUMNS = ("code", "name", "category", "price_usd", "weight", "warranty")


@dataclass(frozen=True)
class Product:
    code: str
    name: str
    category: str
    price_usd: int
    weight: str
    warranty: str

    @property
    def price(self) -> str:
        return f"${self.price_usd}"


def load_catalog(path: Path) -> list[Product]:
    if not path.is_file():
        raise TunewrightError("catalog not found", file=path)
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in CATALOG_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise TunewrightError("missing column (the catalog needs " + ", ".join(CATALOG_COLUMNS) + ")",
                                  file=path, line=1, field=missing[0])
        products = []
        for line, row in enumerate(reader, start=2):
            for column in CATALOG_COLUMNS:
                if not (row.get(column) or "").strip():
                    raise TunewrightError("empty", file=path, line=line, field=column)
            try:
                price = int(row["price_usd"])
            except ValueError:
                raise TunewrightError(f"must be a whole number of dollars, got {row['price_usd']!r}",
                                      file=path, line=line, field="price_usd") from None
            products.append(Product(row["code"].strip(), row["name"].strip(), row["category"].strip(), price,
                                    row["weight"].strip(), row["warranty"].strip()))
    if not products:
        raise TunewrightError("has no products", file=path)
    return products


class Policies:
    """policies.md as sections of bullet lines, looked up by a phrase the line must contain."""

    def __init__(self, path: Path) -> None:
        if not path.is_file():
            raise TunewrightError("policies not found", file=path)
        self.path = path
        self.sections: dict[str, list[tuple[int, str]]] = {}
        section = None
        for number, text in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if text.startswith("## "):
                section = text[3:].strip()
                self.sections[section] = []
            elif text.startswith("- ") and section is not None:
                self.sections[section].append((number, text[2:].strip()))

    def line(self, section: str, phrase: str) -> str:
        if section not in self.sections:
            raise TunewrightError(f"no section '## {section}'", file=self.path)
        hits = [text for _, text in self.sections[section] if phrase in text]
        if len(hits) != 1:
            found = "no" if not hits else f"{len(hits)}"
            raise TunewrightError(f"{found} line in '## {section}' contains {phrase!r} (the media generator "
                                  "answers from exactly one)", file=self.path)
        return hits[0]

    def match(self, section: str, phrase: str, pattern: str) -> re.Match:
        text = self.line(section, phrase)
        found = re.search(pattern, text)
        if found is None:
            raise TunewrightError(f"the line {text!r} in '## {section}' no longer reads as {pattern!r}",
                                  file=self.path)
        return found


# --- Checkout errors (invented; the one fact source that is not catalog.csv or policies.md) -------------

@dataclass(frozen=True)
class CheckoutError:
    key: str
    code: str
    title: str
    message: str          # the banner's second line; {product}, {promo} and {policy} are filled in
    field: str            # the form field drawn with an error outline
    answer: str           # what it means and what to do; same placeholders


CHECKOUT_ERRORS = (
    CheckoutError("card-declined", "E-402", "Payment declined",
                  "Your card was declined by the bank that issued it.", "card",
                  "Error E-402 means the bank that issued your card declined the payment, so the order "
                  "was not placed. Check the card number, expiry date and billing address, then try again "
                  "or use another card."),
    CheckoutError("cvv-mismatch", "E-405", "Security code does not match",
                  "The 3-digit security code (CVV) does not match this card.", "cvv",
                  "Error E-405 means the 3-digit security code (CVV) you entered does not match the card. "
                  "Re-enter the code printed on the back of your card and place the order again."),
    CheckoutError("address-not-deliverable", "E-311", "Address not deliverable",
                  "{policy} Please enter a US shipping address.", "country",
                  "Error E-311 means we cannot deliver to that address: {policy_full} Enter a shipping "
                  "address in the United States to complete your order."),
    CheckoutError("promo-expired", "E-219", "Promo code expired",
                  "The promo code {promo} has expired.", "promo",
                  "Error E-219 means the promo code {promo} has expired, so its discount cannot be "
                  "applied. Remove the code and you can check out at the regular price."),
    CheckoutError("out-of-stock", "E-507", "Item out of stock",
                  "{product_name} ({product_code}) is out of stock.", "cart",
                  "Error E-507 means the {product_name} ({product_code}) in your cart is out of stock, "
                  "so the order cannot go through with it. Remove it from your cart to check out the "
                  "rest of your order."),
    CheckoutError("session-expired", "E-118", "Checkout session expired",
                  "Your checkout session timed out. Reload the page to continue.", "none",
                  "Error E-118 means your checkout session timed out before the order was placed. Reload "
                  "the page and place the order again."),
)

PROMO_CODES = ("SPRING15", "TRAIL10", "WELCOME5", "CAMP20")
FOREIGN_COUNTRIES = ("Canada", "Mexico", "United Kingdom", "Germany", "Australia")


def shipping_rule(policies: Policies) -> tuple[int, str]:
    """(free above this many dollars, the fee below it), from the standard shipping line."""
    found = policies.match("Shipping", "Standard shipping is free",
                           r"free on orders over \$(\d+); below that it costs \$(\d+\.\d\d)")
    return int(found.group(1)), found.group(2)


def support_line(policies: Policies) -> str:
    """The sentence every error answer ends with: who to call if it keeps happening."""
    phone = policies.match("Contact", "phone line", r"\b(\d{3}-\d{3}-\d{4})\b").group(1)
    hours = policies.match("Contact", "Customer support is open", r"is open (.+?)\.$").group(1)
    return f"If it keeps happening, call support at {phone} ({hours})."


def shipping_banner(policies: Policies) -> tuple[str, str]:
    """The policy line in the shop's own voice for the banner, and verbatim for the answer."""
    full = policies.line("Shipping", "ships only within")
    found = re.fullmatch(r"Peachtree Outfitters ships (.+)", full)
    if found is None:
        raise TunewrightError(f"the line {full!r} in '## Shipping' no longer reads as "
                              "'Peachtree Outfitters ships ...'", file=policies.path)
    return f"We ship {found.group(1)}", full


# --- Questions about a product in the photo or the voice message -----------------------------------------

def product_answer(topic: str, product: Product, *, pointing: bool) -> str:
    """Answer about one catalog row; `pointing` answers a photo ("That's the ...")."""
    lead = f"That's the {product.name} ({product.code})" if pointing else f"The {product.name}"
    if topic == "price":
        return f"{lead}; it costs {product.price}." if pointing else f"{lead} costs {product.price}."
    if topic == "warranty":
        cover = ("a lifetime warranty" if product.warranty == "lifetime"
                 else f"a warranty of {product.warranty}")
        return f"{lead}; it comes with {cover}." if pointing else f"{lead} comes with {cover}."
    if topic == "identity":
        return f"{lead}, from our {product.category} range. It costs {product.price} and weighs {product.weight}."
    raise ValueError(topic)


LABEL_QUESTIONS = {
    "price": ("how much is this?", "How much does this cost?", "what's the price on this one?"),
    "warranty": ("what's the warranty on this?", "How long is this covered by warranty?"),
    "identity": ("what is this product?", "What am I looking at here?", "which product is this?"),
}

SCREENSHOT_QUESTIONS = ("what does this mean?", "why can't I check out?", "I got this at checkout. What do I do?",
                        "What's wrong here?", "help? it won't let me pay")

SPOKEN_PRODUCT_QUESTIONS = {
    "price": ("How much is the {name}?", "Hi, what does the {name} cost?", "What's the price of the {name}?"),
    "warranty": ("What's the warranty on the {name}?", "How long is the {name} covered by warranty?"),
}

# Spoken policy questions: (topic, question, policies.md section, phrase naming the answering line, reference).
# The answer is that policies.md line verbatim; the reference is the part of it a correct answer must state.
SPOKEN_POLICY_QUESTIONS = (
    ("returns", "How long do I have to return something?", "Returns", "Most items", "45 days"),
    ("returns", "Can I return hiking boots I wore outside once?", "Returns", "Footwear", "60 days"),
    ("returns", "I opened my camp stove. Can I still return it?", "Returns", "camp stoves", "10 percent"),
    ("returns", "How long does a refund take?", "Returns", "Refunds go back", "5 business days"),
    ("returns", "Can I return something that was marked final sale?", "Returns", "final sale", "cannot be returned"),
    ("shipping", "Is shipping free?", "Shipping", "Standard shipping is free", "$75"),
    ("shipping", "How long does standard shipping take?", "Shipping", "Standard shipping takes", "3 to 5 business days"),
    ("shipping", "How much is expedited shipping?", "Shipping", "Expedited", "$14.95"),
    ("shipping", "Do you ship to Canada?", "Shipping", "ships only within", "United States"),
    ("shipping", "If I order this morning, will it ship today?", "Shipping", "Orders placed before", "2 pm"),
)
