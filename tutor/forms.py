"""Forms: the ask box, the bank's filters, the review list (filters, bulk approve or reject), problem and
solution editing, classes, student sign-up."""

from __future__ import annotations

from django import forms
from django.contrib.auth.forms import UserCreationForm
from django.utils import translation
from django.utils.functional import Promise

from tutor.errors import BadQuestion
from tutor.models import Problem, Solution, Topic, normalize_topic
from tutor.services import (
    bank,  # the bank's search
    live,  # which worked solutions were given up (the bank's to-do filter)
    text,  # the question-text rules: the ask page states the limit
)


class AskForm(forms.Form):
    # No `maxlength` on the textarea: a browser cuts a longer paste silently, which is what a student
    # must never meet; the page counts characters, and the server refuses with a message.
    question = forms.CharField(widget=forms.Textarea(attrs={"rows": 4}))

    def clean_question(self) -> str:
        question = self.cleaned_data["question"]
        too_long = text.length_error(question)
        if too_long:
            raise forms.ValidationError(too_long)
        return question


ANY = "any 全部"
# The answer-status menu in the site's two languages (the values are Solution.Status's).
STATUS_CHOICES = [
    ("", ANY),
    ("none", "nothing students can be served 无可用答案"),
    (Solution.Status.APPROVED, "approved by a teacher 老师已审核"),
    (Solution.Status.VERIFIED, "matches the reference answer 与参考答案一致"),
    (Solution.Status.UNVERIFIED, "not yet checked 尚未核对"),
    (Solution.Status.FLAGGED, "needs a teacher's look 需要老师查看"),
    (Solution.Status.REJECTED, "rejected by a teacher 老师已驳回"),
    (Solution.Status.FAILED, "no final answer 没有最终答案"),
]


class BankFilterForm(forms.Form):
    """The bank's filters (the API's `GET /api/problems` too; its schema lists the status values).
    The page's labels are bank.html's own, each menu inside its <label>."""

    q = forms.CharField(required=False, max_length=200, label="search")
    topic = forms.CharField(required=False, max_length=64)
    difficulty = forms.TypedChoiceField(
        required=False,
        coerce=int,
        empty_value=None,
        choices=[("", ANY)] + [(i, str(i)) for i in range(1, 6)],
    )
    lang = forms.ChoiceField(required=False, choices=[("", ANY)] + list(Problem.Lang.choices))
    status = forms.ChoiceField(required=False, choices=STATUS_CHOICES)
    page = forms.IntegerField(required=False, min_value=1)

    def filter(self, qs):
        qs = self.filter_but_status(qs)
        status = self.cleaned_data.get("status")
        return qs.with_status(status) if status else qs

    def filter_but_status(self, qs):
        data = self.cleaned_data
        if data.get("q"):
            qs = bank.search_problems(qs, data["q"])  # annotates search_rank: best matches first
        if data.get("topic"):
            qs = qs.filter(topic=data["topic"])
        if data.get("difficulty"):
            qs = qs.filter(difficulty=data["difficulty"])
        if data.get("lang"):
            qs = qs.filter(lang=data["lang"])
        return qs


class BankPageFilterForm(BankFilterForm):
    """The bank page's filters, plus the teachers' to-do: problems whose worked steps the model gave up."""

    GIVEN_UP = "given_up"
    status = forms.ChoiceField(
        required=False,
        choices=[
            *STATUS_CHOICES[:2],
            (GIVEN_UP, "steps given up: a teacher's turn 待老师解题"),
            *STATUS_CHOICES[2:],
        ],
    )

    def filter(self, qs):
        if self.cleaned_data.get("status") != self.GIVEN_UP:
            return super().filter(qs)
        return self.filter_but_status(qs).filter(pk__in=live.guided_given_up_ids())


class ReviewFilterForm(forms.Form):
    """The review list's filters: which answers, a search of their problems, a topic, the order."""

    show = forms.ChoiceField(
        required=False,
        choices=[
            ("waiting", "waiting for review 待审核"),
            ("flagged", "needs a teacher's look 需要老师查看"),
            (Solution.Status.UNVERIFIED, "not yet checked 尚未核对"),
            (Solution.Status.VERIFIED, "matches the reference answer 与参考答案一致"),
            (Solution.Status.APPROVED, "approved by a teacher 老师已审核"),
            (Solution.Status.REJECTED, "rejected by a teacher 老师已驳回"),
            (Solution.Status.FAILED, "no final answer 没有最终答案"),
            ("all", "every answer 全部答案"),
        ],
    )
    q = forms.CharField(required=False, max_length=200)
    topic = forms.CharField(required=False, max_length=64)
    order = forms.ChoiceField(
        required=False,
        choices=[
            ("seen", "most students served first 看过的学生多的在前"),
            ("new", "newest first 最新的在前"),
        ],
    )

    def options(self) -> dict[str, str]:
        """The filters to apply (defaults for what is missing or not valid)."""
        data = self.cleaned_data if self.is_valid() else {}
        return {
            "show": data.get("show") or "waiting",
            "query": data.get("q") or "",
            "topic": normalize_topic(data.get("topic") or ""),
            "order": data.get("order") or "seen",
        }


class AnswerIdsField(forms.Field):
    """Answer numbers ticked on the review list (repeated `solutions` fields), duplicates dropped."""

    widget = forms.MultipleHiddenInput

    def to_python(self, value) -> list[int]:
        if not value:
            return []
        if isinstance(value, str):
            value = [value]
        ids: list[int] = []
        for raw in value:
            raw = str(raw).strip()
            if not raw.isdigit() or len(raw) > 18:
                raise forms.ValidationError(
                    f"“{raw[:20]}” is not an answer number. 不是答案编号。", code="invalid"
                )
            ids.append(int(raw))
        return list(dict.fromkeys(ids))


class BulkReviewForm(forms.Form):
    """Approve or reject the ticked answers (at most bank.BULK_REVIEW_MAX in one request)."""

    action = forms.ChoiceField(
        choices=[("approve", "Approve selected 批量通过"), ("reject", "Reject selected 批量驳回")],
        error_messages={
            "required": "Choose approve or reject. 请选择通过或驳回。",
            "invalid_choice": "Choose approve or reject. 请选择通过或驳回。",
        },
    )
    solutions = AnswerIdsField(
        error_messages={
            "required": "Tick the answers to approve or reject first. 请先勾选要审核的答案。"
        }
    )

    def clean_solutions(self) -> list[int]:
        ids = self.cleaned_data["solutions"]
        if len(ids) > bank.BULK_REVIEW_MAX:
            raise forms.ValidationError(
                f"At most {bank.BULK_REVIEW_MAX} answers at a time (you ticked {len(ids)}); "
                f"nothing was changed. 一次最多{bank.BULK_REVIEW_MAX}个答案，未做任何改动。"
            )
        return ids

    @property
    def status(self) -> str:
        return {"approve": Solution.Status.APPROVED, "reject": Solution.Status.REJECTED}[
            self.cleaned_data["action"]
        ]


class ProblemForm(forms.ModelForm):
    topic = forms.ChoiceField(required=False, help_text="from the managed list of topics")
    new_topic = forms.CharField(
        required=False,
        max_length=64,
        help_text="or a new topic for the list (stored in lower case; an existing one is reused)",
    )
    tags = forms.CharField(required=False, help_text="comma-separated")
    solution = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 6}),
        help_text="optional worked solution, ending with the final answer in \\boxed{…}",
    )

    class Meta:
        model = Problem
        fields = ["text", "lang", "topic", "new_topic", "tags", "difficulty", "reference_answer"]
        widgets = {"text": forms.Textarea(attrs={"rows": 4})}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["text"].max_length = text.MAX_QUESTION_CHARS
        self.fields["difficulty"].widget = forms.Select(
            choices=[("", "—")] + [(i, str(i)) for i in range(1, 6)]
        )
        self.fields["topic"].choices = [("", "—")] + [
            (t, t) for t in Topic.objects.values_list("name", flat=True)
        ]
        if self.instance.pk:
            self.initial["tags"] = ", ".join(self.instance.tags or [])
            del self.fields["solution"]

    def clean_text(self) -> str:
        value = self.cleaned_data.get("text") or ""
        try:
            return text.validate_question(value)  # empty, only spaces, control characters, too long
        except BadQuestion as exc:
            raise forms.ValidationError(str(exc)) from None

    def clean_solution(self) -> str:
        value = (self.cleaned_data.get("solution") or "").strip()
        return value  # empty: no worked solution is added (never an empty approved answer)

    def clean(self):
        data = super().clean()
        new = normalize_topic(data.get("new_topic") or "")
        if new:
            data["topic"] = new  # services.bank.register_topic adds it to the list when saved
        else:
            data["topic"] = normalize_topic(data.get("topic") or "")
        return data

    def clean_tags(self) -> list[str]:
        return [
            t.strip() for t in self.cleaned_data["tags"].replace("，", ",").split(",") if t.strip()
        ][:20]

    def clean_difficulty(self):
        value = self.cleaned_data["difficulty"]
        if value is not None and not 1 <= value <= 5:
            raise forms.ValidationError("difficulty is 1 to 5")
        return value


EMPTY_SOLUTION = (
    "An answer needs at least a worked solution, an answer or a final answer; an empty one is not "
    "saved. 答案不能为空：请至少填写解题过程、答案或最终答案。"
)


class NotEmptySolution:
    """Mixed into every form that edits an answer (this page's and the admin's): an edit that leaves
    reasoning, answer and final all empty (or only spaces) is refused with a form error, never stored
    and served as an empty approved answer."""

    def clean(self):
        data = super().clean()
        fields = {"reasoning", "answer", "final"}
        if "status" in self.fields and not fields & set(self.changed_data):
            # The admin's review only (approve, reject, flag): bank.review_solution, whose refusal
            # to approve an answer that contradicts the reference answer is said here as a form error.
            if data.get("status") == Solution.Status.APPROVED and self.instance.pk:
                stored = Solution.objects.select_related("problem").get(pk=self.instance.pk)
                refusal = bank.approval_refusal(stored)
                if refusal and stored.status != Solution.Status.APPROVED:
                    raise forms.ValidationError(f"Not approved: {refusal}", code="contradicts")
            return data
        for name in ("reasoning", "answer", "final"):
            if isinstance(data.get(name), str):
                data[name] = data[name].strip()
        if not any(data.get(name) for name in ("reasoning", "answer", "final")):
            raise forms.ValidationError(EMPTY_SOLUTION, code="empty")
        return data


class SolutionEditForm(NotEmptySolution, forms.ModelForm):
    class Meta:
        model = Solution
        fields = ["reasoning", "answer", "final"]
        widgets = {
            "reasoning": forms.Textarea(attrs={"rows": 8}),
            "answer": forms.Textarea(attrs={"rows": 6}),
        }


class SignupForm(UserCreationForm):
    """A student's own account: Django's password rules (AUTH_PASSWORD_VALIDATORS); with
    SUANJING_SIGNUP_CODE set, also the code the teacher gave the class."""

    code = forms.CharField(
        label="Sign-up code 注册码",
        max_length=100,
        required=False,
        help_text="The code your teacher gave you. 老师给你的注册码。",
    )

    # Django's own labels and messages come in the site's language only (Chinese); a student reads both.
    LABELS = {
        "username": (
            "Username 用户名",
            "Letters, digits and @ . + - _ only; at most 150. 只能用字母、数字和 @ . + - _，最多150个字符。",
        ),
        "password1": (
            "Password 密码",
            "At least 8 characters, not only digits, not a common password, not like your username. "
            "至少8个字符，不能全是数字，不能是常见密码，不能与用户名相似。",
        ),
        "password2": (
            "Password again 再次输入密码",
            "The same password, to check. 请再输入一次以便核对。",
        ),
    }
    PASSWORD_ERRORS = {
        "password_too_short": "Too short: at least {min_length} characters. 密码太短：至少{min_length}个字符。",
        "password_too_common": "Too common: choose one that is harder to guess. 密码太常见，请换一个。",
        "password_entirely_numeric": "Not only digits: add some letters. 密码不能全是数字，请加上字母。",
        "password_too_similar": "Too like your username or name. 密码与用户名或姓名太相似。",
    }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        from django.conf import settings

        for name, (label, help_text) in self.LABELS.items():
            self.fields[name].label = label
            self.fields[name].help_text = help_text
        if settings.SUANJING_SIGNUP_CODE:
            self.fields["code"].required = True
        else:
            del self.fields["code"]

    def full_clean(self) -> None:
        """Every error in English and Chinese: the password rules' by their code (Django's Chinese
        for "too short" is missing), the others (lazy translations) rendered in both languages."""
        super().full_clean()
        for errors in (self._errors or {}).values():
            errors.data = [self._bilingual(error) for error in errors.as_data()]

    def _bilingual(self, error: forms.ValidationError) -> forms.ValidationError:
        params = error.params or {}
        if error.code in self.PASSWORD_ERRORS:
            return forms.ValidationError(
                self.PASSWORD_ERRORS[error.code].format(**params), code=error.code
            )
        if not isinstance(error.message, Promise):
            return error  # ours, already in both languages
        texts = []
        for language in ("en", "zh-hans"):
            with translation.override(language):
                text = str(error.message) % params if params else str(error.message)
            if text not in texts:
                texts.append(text)
        return forms.ValidationError(" ".join(texts), code=error.code)

    def clean_code(self) -> str:
        from tutor.throttle import signup_code_ok

        code = self.cleaned_data.get("code") or ""
        if not signup_code_ok(code):
            raise forms.ValidationError("That sign-up code is not right. 注册码不正确。")
        return code


# -- classes and homework (issue 12) ---------------------------------------------------------------


class ClassroomForm(forms.Form):
    name = forms.CharField(label="Class name 班级名称", max_length=100)

    def clean_name(self) -> str:
        name = " ".join(self.cleaned_data["name"].split())
        if not name:
            raise forms.ValidationError("A class needs a name. 请填写班级名称。")
        return name


class RenameForm(ClassroomForm):
    """A class's new name, on its page (ids `rename_*`: the page has other forms)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("auto_id", "rename_%s")
        super().__init__(*args, **kwargs)
        self.fields["name"].label = "New name 新名称"


class JoinForm(forms.Form):
    code = forms.CharField(
        label="Class code 班级代码",
        max_length=32,
        help_text="The code your teacher gave the class. 老师给的班级代码。",
    )


class AssignForm(forms.Form):
    """Bank problems for one of the teacher's classes (`classes`: the ones they may assign to, which
    leaves out archived ones)."""

    classroom = forms.ModelChoiceField(
        queryset=None,
        label="Class 班级",
        empty_label=None,
        error_messages={
            "invalid_choice": "Homework goes to one of your classes that is not archived. "
            "只能布置给你未归档的班级。"
        },
    )
    problems = forms.CharField(
        label="Problem numbers 题号",
        max_length=400,
        help_text="From the bank, e.g. 12, 15, 30. 例如 12, 15, 30",
    )
    due = forms.DateField(
        label="Due 截止日期",
        required=False,
        widget=forms.DateInput(attrs={"type": "date"}),
    )

    def __init__(self, *args, classes, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["classroom"].queryset = classes

    def clean_problems(self) -> list[Problem]:
        numbers: list[int] = []
        raw = self.cleaned_data["problems"].replace("，", ",").replace("#", " ").replace(",", " ")
        for part in raw.split():
            if not part.isdigit():
                raise forms.ValidationError(f"“{part[:20]}” is not a problem number. 不是题号。")
            if int(part) not in numbers:
                numbers.append(int(part))
        if not numbers:
            raise forms.ValidationError("Give problem numbers, e.g. 12, 15. 请填写题号。")
        if len(numbers) > 50:
            raise forms.ValidationError("At most 50 problems at a time. 一次最多50题。")
        found = Problem.objects.in_bank().in_bulk(numbers)
        missing = [f"#{n}" for n in numbers if n not in found]
        if missing:
            raise forms.ValidationError(
                f"Not in the bank: {', '.join(missing)}. 题库里没有这些题。"
            )
        return [found[n] for n in numbers]


class RosterForm(forms.Form):
    file = forms.FileField(
        label="Class list (CSV) 学生名单",
        help_text="One student a row: username, display name. 每行一名学生：用户名，姓名。",
    )
