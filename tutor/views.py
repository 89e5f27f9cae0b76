"""Thin views: permission -> form -> service -> response."""

from django.shortcuts import render


def home(request):
    return render(request, "tutor/home.html")
