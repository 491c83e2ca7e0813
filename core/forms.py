from django import forms

from core.validators import refuse_invisible_characters


class SignupForm(forms.Form):
    username = forms.RegexField(
        regex=r"^[A-Za-z0-9_-]{3,40}$",
        max_length=40,
        error_messages={"invalid": "3 to 40 letters, digits, _ or -."},
    )
    email = forms.EmailField()
    password = forms.CharField(widget=forms.PasswordInput, min_length=8)


class TokenForm(forms.Form):
    name = forms.CharField(max_length=100, validators=[refuse_invisible_characters])
